// Starts Swagger UI on /docs (a file, not an inline script: the page's CSP allows scripts from 'self' only).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // null: Swagger UI would otherwise fetch a validity badge from an outside validator.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
