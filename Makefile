# The two commands of the README. Each does all set-up first (apt packages, .venv).
.PHONY: demo test setup lint bench

demo: setup
	.venv/bin/tortie-lab demo

test: setup
	.venv/bin/pytest -q

setup:
	@scripts/setup.sh

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python bench/datastore.py
	.venv/bin/python bench/ipam.py
	.venv/bin/python bench/routes.py
	.venv/bin/python bench/bgp.py
