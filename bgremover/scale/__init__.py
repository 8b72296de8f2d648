"""Scale-out on Ray (the optional `ray` extra): `rmbg remove --ray` and `rmbg serve --ray`.

Nothing here is imported by the default app; the CLI imports these modules only after
checking that Ray is installed, so the plain install and the Docker images run without it.
"""
