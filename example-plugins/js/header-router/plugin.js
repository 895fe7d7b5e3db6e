// `header-router`: sends each request to the provider and model its routing header names.
//
// Clients (or an upstream proxy) pick a route with a header, e.g. `x-route: fast`, instead of
// knowing provider and model names; the pre-hook rewrites the request's target to the route's
// `provider/model` (the request's own fallbacks stay as they are: the gateway fixes the list of
// targets when the request arrives). The chosen route is stored in the request context as `router.route`, for later
// plugins and the access log. A request without the header (or with a route that does not exist)
// goes to `default` if one is set, else it is left alone, or refused with a 400 when `strict`.
//
// Config (unknown fields rejected):
//
// | field     | type                         | default     | meaning                                   |
// |-----------|------------------------------|-------------|-------------------------------------------|
// | `header`  | string                       | `"x-route"` | the routing header                        |
// | `routes`  | object: route -> string      | (required)  | each route's target, `provider/model`     |
// | `default` | string                       | none        | the route used without (a known) header   |
// | `strict`  | bool                         | `false`     | refuse unknown routes instead of passing  |
//
// ```json
// { "routes": { "fast": "mock/echo", "smart": "openai/gpt-4o" }, "default": "fast" }
// ```

import { Continue, Fail, Plugin, configError, error, exportPlugin, log, parseConfig } from '../../../plugin-sdk/js/wasmgate.js';

/** A `provider/model` target split in two, or a config error naming `path`. */
function target(path, value) {
  const at = typeof value === 'string' ? value.indexOf('/') : -1;
  if (at < 1 || at === value.length - 1) {
    throw configError(path, `expected "provider/model" (e.g. "mock/echo"), got ${JSON.stringify(value)}`);
  }
  return { provider: value.slice(0, at), model: value.slice(at + 1), text: value };
}

/** Routes requests by header to a provider and model. */
class HeaderRouter extends Plugin {
  static pluginName = 'header-router';
  // Nothing about a request is kept in `this`: any instance may serve any call.
  static sharedInstances = true;

  constructor(config) {
    super();
    const c = parseConfig(config, {
      required: { routes: 'object' },
      optional: { header: ['string', 'x-route'], default: 'string', strict: ['boolean', false] },
    });
    this.header = c.header.toLowerCase();
    this.strict = c.strict;
    this.routes = new Map();
    for (const [name, value] of Object.entries(c.routes)) {
      this.routes.set(name, target(`routes.${name}`, value));
    }
    if (c.default !== undefined && !this.routes.has(c.default)) {
      throw configError('default', `no route is named ${JSON.stringify(c.default)}`);
    }
    this.fallbackRoute = c.default;
  }

  preHook(ctx, req) {
    const asked = ctx.header(this.header);
    let route = asked !== undefined && this.routes.has(asked) ? asked : this.fallbackRoute;
    if (asked !== undefined && !this.routes.has(asked) && this.strict) {
      const known = [...this.routes.keys()].join(', ');
      return Fail(
        error(400, `unknown route "${asked}" in ${this.header}; known routes: ${known}`, {
          kind: 'invalid_request_error',
          code: 'unknown_route',
          fallbacks: false,
        }),
      );
    }
    if (route === undefined) return Continue();
    const to = this.routes.get(route);
    log.debug(`route ${route}: ${req.provider}/${req.model} -> ${to.text}`);
    req.provider = to.provider;
    req.model = to.model;
    ctx.set('router.route', route);
    return Continue(req);
  }
}

export const { getName, hooks, init, transportInterceptor, preHook, postHook, streamChunk, onError, cleanup } =
  exportPlugin(HeaderRouter);
