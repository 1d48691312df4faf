# The two commands of the README:
#   make lab    - a real local cluster in network namespaces (root)
#   make test   - installs what the tests need and runs the whole suite (root)
.PHONY: setup test test-fast test-ipvs bench-ipvs lint lab lab-down clean

setup:
	scripts/setup.sh

test: setup
	scripts/test.sh

test-fast: setup
	.venv/bin/pytest -q -m "not netns and not ipvs"

test-ipvs: setup
	.venv/bin/python scripts/ipvs_vm.py

bench-ipvs: setup
	.venv/bin/python scripts/ipvs_vm.py -- .venv/bin/python bench/ipvs_reconcile.py

lint: setup
	.venv/bin/ruff check .

lab: setup
	.venv/bin/lvslab up

lab-down: setup
	.venv/bin/lvslab down

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache
