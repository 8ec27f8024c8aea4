# syntax=docker/dockerfile:1
# Multi-stage build of the gateway: compile the workspace, then ship only the gateway, its production
# dependencies and the publisher SDK it depends on, running as the unprivileged `node` user.

FROM node:20-bookworm-slim AS build
RUN npm install -g pnpm@10.34.9
WORKDIR /src
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml tsconfig.base.json tsconfig.json ./
COPY packages/publisher-sdk/package.json packages/publisher-sdk/
COPY packages/gateway/package.json packages/gateway/
RUN pnpm install --frozen-lockfile
COPY deploy deploy
COPY packages packages
RUN pnpm run build \
 && pnpm --filter @sse-gateway/gateway deploy --prod --legacy /out

FROM node:20-bookworm-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080
WORKDIR /app
COPY --from=build --chown=node:node /out /app
USER node
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# exec form: node is PID 1's child of nothing, so SIGTERM reaches it and the drain runs.
CMD ["node", "dist/main.js"]
