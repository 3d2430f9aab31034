# The Chorus image used by docker-compose.yml: one image, the role comes from CHORUS_ROLE.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN npm ci && npm prune --omit=dev
ENV CHORUS_HOST=0.0.0.0
EXPOSE 1883 8080
USER node
CMD ["node", "dist/server/cli.js", "serve"]
