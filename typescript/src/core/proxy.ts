/**
 * The proxy a request goes through, from the environment, read as Python's httpx reads it
 * (urllib's getproxies, then httpx's mounts), so that both packages take the same way out:
 *
 * - `<scheme>_proxy` in any case; a lower-case name wins over another spelling, and a lower-case
 *   one set empty removes the proxy. `HTTP_PROXY` is ignored when `REQUEST_METHOD` is set (a CGI
 *   script, CVE-2016-1000110).
 * - https URLs take `HTTPS_PROXY`, http URLs `HTTP_PROXY`, else both take `ALL_PROXY`.
 * - `NO_PROXY`, comma-separated: `*` turns every proxy off; `host` matches the host and its
 *   subdomains, `.host` only its subdomains; an IPv4 or IPv6 address or `localhost` only itself
 *   (a CIDR suffix is dropped: no ranges, as in httpx); `host:port` only that port (a default
 *   port is no port, as in URLs); `scheme://host` only that scheme.
 *
 * The socket transport speaks to http:// proxies only; any other scheme is refused with
 * `proxy_error` (httpx also takes https:// and, with socksio, socks5:// proxies).
 */

/** A proxy, taken apart once per client. */
export interface ProxyServer {
  readonly hostname: string;
  readonly port: number;
  /** The proxy's URL without credentials: what error messages name. */
  readonly url: string;
  /** The `Proxy-Authorization` value from the URL's credentials (Basic), or undefined. */
  readonly authorization: string | undefined;
  /** What the pool keys its connections by (the URL and the credentials). */
  readonly key: string;
  /** Set when the proxy cannot be used (an unsupported scheme): the error's detail. */
  readonly unusable: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The environment, copied (once per client): none where there is no `process` (browsers,
 * Workers), or where reading it is refused (Deno without --allow-env throws NotCapable).
 */
function processEnv(): Env {
  try {
    const process = (globalThis as { process?: { env?: Env } }).process;
    return { ...process?.env };
  } catch {
    return {};
  }
}

/** The `<scheme>_proxy` variables by scheme (lower case), as urllib's getproxies_environment. */
export function proxyVariables(env: Env = processEnv()): Map<string, string> {
  const proxies = new Map<string, string>();
  const names = Object.keys(env);
  for (const name of names) {
    const value = env[name];
    const lower = name.toLowerCase();
    if (value && lower.endsWith("_proxy")) proxies.set(lower.slice(0, -6), value);
  }
  if (env.REQUEST_METHOD !== undefined) proxies.delete("http");
  // Second pass: the lower-case spellings win, and one set empty removes the proxy.
  for (const name of names) {
    if (!name.endsWith("_proxy")) continue;
    const value = env[name];
    const scheme = name.toLowerCase().slice(0, -6);
    if (value) proxies.set(scheme, value);
    else proxies.delete(scheme);
  }
  return proxies;
}

/** The proxy for `url` (an http or https URL), or undefined to connect directly. */
export function proxyFor(url: URL, env: Env = processEnv()): ProxyServer | undefined {
  const proxies = proxyVariables(env);
  const scheme = url.protocol.slice(0, -1);
  const value = proxies.get(scheme) ?? proxies.get("all");
  if (value === undefined) return undefined;
  const host = bare(url.hostname).toLowerCase();
  const port = url.port === "" ? undefined : Number(url.port);
  for (const entry of (proxies.get("no") ?? "").split(",")) {
    const pattern = entry.trim();
    if (pattern === "*") return undefined;
    if (pattern !== "" && bypasses(pattern, scheme, host, port)) return undefined;
  }
  return parseProxy(value);
}

/** Whether one NO_PROXY entry matches the URL (httpx's URLPattern of that entry). */
function bypasses(entry: string, scheme: string, host: string, port: number | undefined): boolean {
  let pattern: string;
  if (entry.includes("://")) pattern = entry;
  else if (isIPv4(entry.split("/")[0] as string)) pattern = `all://${entry}`;
  else if (isIPv6(entry.split("/")[0] as string)) pattern = `all://[${entry}]`;
  else if (entry.toLowerCase() === "localhost") pattern = `all://${entry}`;
  else pattern = `all://*${entry}`;
  const at = pattern.indexOf("://");
  const patternScheme = pattern.slice(0, at).toLowerCase();
  if (patternScheme !== "all" && patternScheme !== scheme) return false;
  // The authority: up to the first "/", then an optional ":port" (after any "[v6]").
  const authority = (pattern.slice(at + 3).split(/[/?#]/, 1)[0] as string).toLowerCase();
  const colon = authority.lastIndexOf(":");
  let patternHost = authority;
  let patternPort: number | undefined;
  if (
    colon !== -1 &&
    colon > authority.lastIndexOf("]") &&
    /^\d+$/.test(authority.slice(colon + 1))
  ) {
    patternHost = authority.slice(0, colon);
    patternPort = defaultless(patternScheme, Number(authority.slice(colon + 1)));
  }
  patternHost = bare(patternHost);
  if (patternHost !== "" && patternHost !== "*" && !hostMatches(patternHost, host)) return false;
  return patternPort === undefined || patternPort === port;
}

function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith("*.")) {
    const domain = pattern.slice(2);
    return host.length > domain.length + 1 && host.endsWith(`.${domain}`);
  }
  if (pattern.startsWith("*")) {
    const domain = pattern.slice(1);
    return host === domain || host.endsWith(`.${domain}`);
  }
  return host === pattern;
}

/** A port as URLs keep it: none when it is the scheme's default. */
function defaultless(scheme: string, port: number): number | undefined {
  return (scheme === "http" && port === 80) || (scheme === "https" && port === 443)
    ? undefined
    : port;
}

function bare(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}

function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return (
    parts.length === 4 &&
    parts.every((part) => /^(?:0|[1-9][0-9]{0,2})$/.test(part) && Number(part) <= 255)
  );
}

function isIPv6(text: string): boolean {
  return text.includes(":") && /^[0-9A-Fa-f:.]+(?:%[^\s]+)?$/.test(text);
}

/** A proxy URL (`host:port` alone means http://), its credentials turned into Basic auth. */
function parseProxy(value: string): ProxyServer {
  const parsed = new URL(value.includes("://") ? value : `http://${value}`);
  const scheme = parsed.protocol.slice(0, -1).toLowerCase();
  const url = `${scheme}://${parsed.host}`;
  let authorization: string | undefined;
  if (parsed.username !== "" || parsed.password !== "") {
    const credentials = `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`;
    authorization = `Basic ${base64(credentials)}`;
  }
  return {
    hostname: bare(parsed.hostname),
    port: parsed.port === "" ? (scheme === "https" ? 443 : 80) : Number(parsed.port),
    url,
    authorization,
    key: `${url} ${authorization ?? ""}`,
    unusable:
      scheme === "http" ? undefined : `${scheme}:// proxies are not supported (http:// only)`,
  };
}

/** Base64 of the UTF-8 bytes of `text` (btoa takes Latin-1 only). */
function base64(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}
