"""The dashboard's side of KD Playground: what exists only for the browser.

``app.py`` and ``pages/`` are the Streamlit pages; this package holds what they share:

* :mod:`kdapp.live` — the background workers a page starts and polls (a run, several seeds, a
  resume), the server's training slots, pausing workers while a page renders, progress and ETA;
* :mod:`kdapp.sweep_run` — the α × T sweep's worker;
* :mod:`kdapp.ui` — widget values to configs, titled tables, formulas, CLI strings;
* :mod:`kdapp.shared` — session state, URL scopes, cached loaders, the sidebar;
* :mod:`kdapp.charts`, :mod:`kdapp.lab` — the Plotly figures and the lab pages' pieces.

The engine (:mod:`kdcore`) never imports this package (tests/test_architecture.py).
"""
