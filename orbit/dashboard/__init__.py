"""ORBIT's web dashboard: server-rendered pages under ``/dashboard`` with small scripts.

One module per job:

- :mod:`~orbit.dashboard.routes`: the pages and :func:`~orbit.dashboard.routes.install`,
  which mounts them on orbit-server's application;
- :mod:`~orbit.dashboard.sessions`: browser sessions and their CSRF tokens (in memory);
- :mod:`~orbit.dashboard.auth`: the logged-in viewer and the CSRF check, as dependencies;
- :mod:`~orbit.dashboard.forms`: the Live Migrate form (text in, MigrationSettings out);
- :mod:`~orbit.dashboard.queries`: what the pages read from the database;
- :mod:`~orbit.dashboard.present`: numbers with units, and which controls apply;
- :mod:`~orbit.dashboard.render`: the Jinja2 environment;
- :mod:`~orbit.dashboard.errors`: exceptions to pages;
- ``templates/`` and ``static/`` (the scripts draw the migration chart themselves: no
  third-party script, no CDN).
"""
