// The runtime's run inside workerd (Miniflare): run.mjs bundles this module with brainline (as
// wrangler would) and asks it over HTTP; the answer is what the checks saw, or the failure.
import { runChecks } from "./check.mjs";

export default {
  async fetch(request) {
    const { origin, transport } = await request.json();
    try {
      return Response.json({ ok: true, seen: await runChecks(origin, transport) });
    } catch (err) {
      return Response.json({ ok: false, error: `${err?.name}: ${err?.message}\n${err?.stack ?? ""}` });
    }
  },
};
