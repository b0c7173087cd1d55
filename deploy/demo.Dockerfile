# The live dashboard demo (web/demo): the React app, built, and its Node backend with
# SQLite. Used by docker-compose.yml's `demo` profile.
FROM node:20-bookworm-slim AS build
# better-sqlite3 builds its native module when no prebuilt one matches.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
COPY web/packages/web/package.json packages/web/
COPY web/packages/react/package.json packages/react/
COPY web/demo/package.json demo/
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app/web
COPY --from=build /src/web ./
# The SQLite database lives in a volume the unprivileged user can write.
RUN mkdir /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 8080
ENTRYPOINT ["node", "demo/server/main.mjs"]
