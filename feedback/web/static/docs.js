// /docs: starts Swagger UI (SwaggerUIBundle, /docs-assets/swagger-ui-bundle.js) on the app's OpenAPI
// document, with FastAPI's default options. A served file rather than FastAPI's inline script, so
// the page carries the same Content-Security-Policy as every other page (script-src 'self').
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
