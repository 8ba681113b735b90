"""`python -m tandem.router ...` runs the router stand-alone (same flags as `tandem router`)."""

from tandem.router.main import run

if __name__ == "__main__":
    run()
