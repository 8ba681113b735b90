# Tandem P/D router: `tandem router ...` (the operator passes the flags). Build from the root:
#   docker build -f images/router.Dockerfile -t tandem/router:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[router]"

FROM python:3.11-slim
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin router
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && python -c "import zmq, msgpack, tandem.router.main"
USER 65532:65532
ENV PYTHONUNBUFFERED=1 HOME=/tmp
EXPOSE 8000 7500
ENTRYPOINT ["tandem", "router"]
