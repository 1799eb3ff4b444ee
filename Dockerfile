# Multi-stage: a static ringlb binary in an image with nothing else in it,
# running as an unprivileged user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ringlb ./cmd/ringlb \
 && echo 'ringlb:x:10001:10001:ringlb:/:/sbin/nologin' > /out/passwd \
 && echo 'ringlb:x:10001:' > /out/group

FROM scratch
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
COPY --from=build /out/ringlb /usr/local/bin/ringlb
COPY configs/examples /etc/ringlb/examples
USER 10001:10001
# data (balancer 8080, edge 7101), admin (9090, 9101), gossip (7946 tcp+udp)
EXPOSE 8080 7101 9090 9101 7946 7946/udp
# The demo's (and a balancer's on 8080) health. Give another role its own, in exec form
# (the image has no shell, so `docker run --health-cmd` cannot run), e.g. for an edge in
# compose: healthcheck: { test: [CMD, /usr/local/bin/ringlb, probe, -url, "http://127.0.0.1:9101/healthz"] }
# else an orchestrator that replaces unhealthy containers replaces it again and again.
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/ringlb", "probe", "-url", "http://127.0.0.1:8080/_ringlb/health"]
ENTRYPOINT ["/usr/local/bin/ringlb"]
# The demo listens on loopback, in a container too, where a published port (docker run -p)
# cannot reach it. To open its pad from the host, ask for the balancers' ports on every
# interface: docker run -p 8080:8080 -p 8081:8081 ringlb demo -listen-all
# (admin, gossip, edges and DNS stay on loopback: the demo's admin API has no token).
CMD ["demo"]
