# The two commands: `make run` (the server on its embedded defaults) and `make test` (the whole suite).
.PHONY: run test setup bench bench-report fuzz
setup:
	scripts/bootstrap.sh
run: setup
	.venv/bin/sluice serve
test:
	scripts/test.sh
bench: setup
	cd native && cargo bench -p sluice-core
# Reruns the README's results table (bench/readme_report.py) and writes it into README.md.
bench-report: setup
	.venv/bin/python -m bench.readme_report
fuzz:
	scripts/fuzz.sh run 60
