# The two commands of the README. Each does all set-up first (apt packages, .venv).
.PHONY: demo test setup lint bench

demo: setup
	.venv/bin/tortie-lab demo

# Lint first: CI runs `make test`, so a lint failure fails it.
test: lint
	.venv/bin/pytest -q

setup:
	@scripts/setup.sh

# mypy takes its files and settings from pyproject.toml ([tool.mypy]).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/datastore.py
	.venv/bin/python bench/ipam.py
	.venv/bin/python bench/routes.py
	.venv/bin/python bench/bgp.py
