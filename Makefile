# The two commands of the README:
#   make demo   napari with the plugin's widgets docked and a brain made from the MNI template
#   make test   the whole test suite (under a virtual X server, so it runs headless too)
# Both install what is missing first (scripts/bootstrap.sh).

VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test setup clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@if [ -n "$$DISPLAY" ] || [ -n "$$WAYLAND_DISPLAY" ]; then \
		$(VENV)/bin/softseg demo; \
	else \
		echo "No display found: running the demo under Xvfb and saving a screenshot to demo-screenshot.png"; \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(VENV)/bin/softseg demo --screenshot demo-screenshot.png; \
	fi

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist
