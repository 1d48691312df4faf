# The two commands of the README:
#   make lab    - a real local cluster in network namespaces (root)
#   make test   - installs what the tests need and runs the whole suite (root)
# Targets that need root, run by another user, run this make again through sudo; as root
# (e.g. a minimal Debian box without the sudo package) they run as they are.
.PHONY: setup test test-fast test-ipvs bench-ipvs lint lab lab-down clean

ROOT_GOALS := setup test test-ipvs bench-ipvs lab lab-down
GOALS := $(or $(MAKECMDGOALS),setup)

ifneq ($(shell id -u),0)
ifneq ($(filter $(ROOT_GOALS),$(GOALS)),)
AS_ROOT := sudo
endif
endif

ifeq ($(AS_ROOT),sudo)

.PHONY: as-root
$(GOALS): as-root
	@:
as-root:
	@command -v sudo >/dev/null || { \
	  echo "make $(GOALS): needs root, and this system has no sudo: run it as root" >&2; \
	  exit 1; }
	sudo $(MAKE) $(GOALS)

else

setup:
	scripts/setup.sh

test: setup
	scripts/test.sh

test-fast: setup
	.venv/bin/pytest -q -m "not netns and not ipvs and not scale and not slow"

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

endif
