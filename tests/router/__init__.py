"""Router tests: pure pick and parsing units, and components against fake engines."""
