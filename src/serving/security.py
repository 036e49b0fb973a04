"""Response headers every answer of the HTTP server carries: the page, its static files, JSON
answers and every error, down to the protocol layer's raw 400/408.

The page (``static/index.html``) loads only ``static/app.js`` and ``static/style.css`` from its own
origin, has no inline script or style, previews photos from ``blob:`` URLs and posts to
``/invocations`` on the same origin: that is all the policy allows.
"""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)
