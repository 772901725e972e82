# The two quick-start commands (see README):
#   make demo   set up .venv and run `shenjing demo` (writes runs/demo/index.html)
#   make test   set up .venv with test tools and run the test suite
.PHONY: demo test lint bench

demo:
	@bash scripts/setup.sh
	.venv/bin/shenjing demo

test:
	@bash scripts/setup.sh --dev
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check src tests bench scripts
