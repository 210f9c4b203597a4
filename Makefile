# The two commands of the README. Each does all set-up first (apt packages, .venv).
.PHONY: demo test unit setup lint bench image

demo: setup
	.venv/bin/tortie-lab demo

# Lint first: CI runs `make test`, so a lint failure fails it.
test: lint
	.venv/bin/pytest -q

# The no-root tier (docs/testing.md): no root, etcd, namespaces or service set-up.
# Runs setup only when there is no .venv yet, so a user with a venv needs no root.
unit:
	@test -x .venv/bin/python || scripts/setup.sh
	.venv/bin/python -m pytest -q tests/unit

setup:
	@scripts/setup.sh

# The container image localhost/tortie:<content tag>, built only when this tree's is absent
# (docs/image.md). setup does not build it: the lab and the e2e tests build it on demand.
image: setup
	.venv/bin/python -m lab.image

# mypy takes its files and settings from pyproject.toml ([tool.mypy]).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/datastore.py
	.venv/bin/python bench/ipam.py
	.venv/bin/python bench/routes.py
	.venv/bin/python bench/bgp.py
