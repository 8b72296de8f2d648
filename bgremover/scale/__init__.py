"""Scale-out on Ray (the optional `ray` extra): `rmbg remove --ray` and `rmbg serve --ray`.

Nothing here is imported by the default app; the CLI imports these modules only after
checking that Ray is installed, so the plain install and the Docker images run without it.
This package is the outermost host below the CLI: it runs the image stages (`batch`), whole
clips (`clips`, through `video`) and the HTTP API of `web.api` (`serve`) on a cluster, and
nothing in `web/`, `video/` or below imports it (tests/project/test_layers.py).
"""
