# syntax=docker/dockerfile:1
#
# oidc-ext-authz: Envoy/Istio ext_authz gRPC server.
#   docker build -t oidc-ext-authz:0.1.0 .
#   docker run --read-only -p 9000:9000 -p 9090:9090 \
#     -v "$PWD/config.yaml:/etc/oidc-ext-authz/config.yaml:ro" -e COOKIE_KEY=... oidc-ext-authz:0.1.0
#
# Node 26 ("Lithium") is the Active LTS line since 2026-10-28; 24 is in maintenance until 2028-04.
# Override with --build-arg NODE_IMAGE=node:24-bookworm-slim if you must stay on 24.
# test/image.test.ts replays the runtime stage's COPY and `npm ci` lines from this file: keep them plain
# (one `npm ci` per RUN, `COPY [--from=build] SRC... DEST`).
ARG NODE_IMAGE=node:26-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    OIDC_EXT_AUTHZ_CONFIG=/etc/oidc-ext-authz/config.yaml
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only, no lifecycle scripts; the npm cache is dropped so nothing in the image is writable state.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/proto ./proto
# Everything above is owned by root and read-only for the service user; the process never writes to disk
# (logs go to stdout), so the container runs with readOnlyRootFilesystem and no writable volume.
# 65532 is the conventional "nonroot" uid/gid; it has no passwd entry and needs none.
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
