import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// The HTTPS tests' certificate authority. Node reads NODE_EXTRA_CA_CERTS when a process starts,
// so it is set here, before vitest forks its test workers (which inherit the environment).
process.env.NODE_EXTRA_CA_CERTS = fileURLToPath(
  new URL("./test/fixtures/localhost-cert.pem", import.meta.url),
);

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20000,
    pool: "forks",
  },
});
