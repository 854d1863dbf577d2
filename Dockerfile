# syntax=docker/dockerfile:1
# The custom Telegraf (outputs.ockam and inputs.ockam_listener built in), the
# ockam command and ockam-intruder, as static binaries in a small image. Used
# by docker-compose.yml (every service but influxdb, chronograf and
# kapacitor); alone: docker build -t telegraf-ockam .
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO_ENABLED=0: static binaries that run on any base image. The PKCS#11
# vault backend needs cgo, so these binaries refuse a pkcs11: vault spec and
# say why (docs/CONCEPTS.md, "Vault backends"); the demo uses file vaults.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=1.39.3" \
      -o /out/ ./cmd/telegraf ./cmd/ockam ./cmd/ockam-intruder

# Alpine rather than distroless: the init service runs a shell script.
FROM alpine:3.22
RUN addgroup -S -g 65532 ockam && adduser -S -D -H -u 65532 -G ockam ockam
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
CMD ["telegraf", "--config", "/etc/telegraf/telegraf.conf"]
