#!/usr/bin/env bash
# Regenerates the Go code of every .proto in the tree. Needed only after editing a
# .proto: the generated files are committed, so builds and CI never run protoc.
# Needs: apt-get install protobuf-compiler; go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
# and google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
for p in $(git ls-files '*.proto'; git ls-files --others --exclude-standard '*.proto'); do
  protoc -I "$(dirname "$p")" --go_out=paths=source_relative:"$(dirname "$p")" \
    --go-grpc_out=paths=source_relative:"$(dirname "$p")" "$p"
done
