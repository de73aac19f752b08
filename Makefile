# The two commands: `make run` (the server on its embedded defaults) and `make test` (the whole suite).
.PHONY: run test setup bench fuzz
setup:
	scripts/bootstrap.sh
run: setup
	.venv/bin/sluice serve
test:
	scripts/test.sh
bench: setup
	cd native && cargo bench -p sluice-core
fuzz:
	scripts/fuzz.sh run 60
