# medplum-agent developer entry points.
#   make test    installs missing test peers, then runs vet, format check and every test
#   make bench   runs the micro-benchmarks
#   make build   builds ./medplum-agent
#   make docs    regenerates man/ and completions/ from the command tree
#   make release-check  goreleaser check, a snapshot deb/rpm build and a look inside the deb

GO        ?= go
PEERS     := $(CURDIR)/.peers
MEDPLUM_CLI_VERSION := 5.0.10
DEB_PEERS := dcmtk python3-hl7 socat iputils-ping
# Each fuzz target runs this long in `make fuzz`.
FUZZTIME  ?= 20s

.PHONY: all build test peers vet cross-vet check-format unit fuzz bench docs release-check clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o medplum-agent ./cmd/medplum-agent

test: peers vet cross-vet check-format unit release-check

# Test peers: the published Medplum CLI (npm) into .peers/, and Debian packages
# when they are missing and we are root (CI is). Installed only when absent.
peers:
	@if [ ! -x "$(PEERS)/node_modules/.bin/medplum" ]; then \
		echo "installing @medplum/cli@$(MEDPLUM_CLI_VERSION) into .peers/"; \
		mkdir -p "$(PEERS)" && npm install --prefix "$(PEERS)" --no-audit --no-fund --no-save --loglevel=error \
			"@medplum/cli@$(MEDPLUM_CLI_VERSION)"; \
	fi
	@missing=""; for p in $(DEB_PEERS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing Debian packages:$$missing (run 'sudo apt-get install$$missing')" >&2; exit 1; \
		fi; \
	fi

vet:
	$(GO) vet ./...

# The Windows service code only compiles for Windows: check it from here.
cross-vet:
	GOOS=windows $(GO) vet ./pkg/service ./pkg/cmd/...
	GOOS=darwin $(GO) vet ./pkg/service

check-format:
	@out=$$(gofmt -l cmd pkg); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# E2E_REQUIRE_PEERS turns a missing interop peer into a failure instead of a skip.
unit:
	E2E_REQUIRE_PEERS=1 $(GO) test -race -count=1 -timeout 20m ./...

fuzz:
	@for pkg in $$($(GO) list ./pkg/...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

docs:
	$(GO) run ./cmd/gen-docs

release-check:
	pkg/service/packaging/check-release.sh

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/...

clean:
	rm -rf medplum-agent dist .peers
