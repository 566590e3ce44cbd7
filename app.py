"""KD Playground: the dashboard. Run with ``streamlit run app.py``.

This file owns navigation and the sidebar every page shares; the pages live in ``pages/``
and the engine in ``kdcore``. To add a page, append one ``st.Page`` to ``PAGES``.
"""
from __future__ import annotations

import streamlit as st

PAGES = [
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page("pages/soft_targets.py", title="Soft targets", icon=":material/bar_chart:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    st.Page("pages/guide.py", title="Guide", icon=":material/menu_book:"),
    # the teaching lab (issue 4)
    st.Page("pages/presets.py", title="Presets & tour", icon=":material/school:"),
    st.Page("pages/temperature_lab.py", title="Temperature lab", icon=":material/thermostat:"),
    st.Page("pages/boundaries.py", title="Decision boundaries", icon=":material/scatter_plot:"),
    st.Page("pages/dark_knowledge.py", title="Dark knowledge", icon=":material/dark_mode:"),
    st.Page("pages/omitted_class.py", title="Omitted class", icon=":material/visibility_off:"),
    st.Page("pages/sweep.py", title="α × T sweep", icon=":material/grid_on:"),
]


def main() -> None:
    st.set_page_config(page_title="KD Playground", page_icon=":material/school:", layout="wide")
    page = st.navigation(PAGES)
    with st.sidebar:
        st.markdown("### KD Playground")
        st.caption("Train a small student from a big teacher and see whether it helps.")
    from kdcore.live import foreground  # imports torch; after the first paint of the chrome
    from pages._shared import sidebar_status

    with foreground():  # background training pauses while this page is computed
        sidebar_status()
        page.run()


if __name__ == "__main__":
    main()
