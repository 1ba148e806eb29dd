// Module hooks for entry.test.mjs: any import that resolves into @livekit/ fails the process.
export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (resolved.url.includes("/node_modules/@livekit/")) {
    throw new Error(`imported ${resolved.url} (from ${context.parentURL})`);
  }
  return resolved;
}
