"""KD Playground: the dashboard. Run with ``streamlit run app.py``.

This file owns navigation and the sidebar every page shares; the pages live in ``pages/``, what
they share (workers, session state, widgets, figures) in ``kdapp/``, and the engine in ``kdcore``. To add a page, append one ``st.Page`` to ``PAGES``.
"""
from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitValueAboveMaxError, StreamlitValueBelowMinError

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
    # an emoji favicon is drawn by the browser; a :material/…: one is fetched from Google's servers
    st.set_page_config(page_title="KD Playground", page_icon="🎓", layout="wide")
    page = st.navigation(PAGES)
    with st.sidebar:
        st.markdown("### KD Playground")
        st.caption("Train a small student from a big teacher and see whether it helps.")
    from kdapp.live import foreground  # imports torch; after the first paint of the chrome
    from kdapp.shared import freeze_startup_objects, sidebar_status

    if note := st.session_state.pop("kd_link_reset", None):
        st.warning(note, icon=":material/link_off:")
    with foreground():  # background training pauses while this page is computed
        sidebar_status()
        try:
            page.run()
            freeze_startup_objects()  # once, after the first page has imported what pages use
        except (StreamlitValueAboveMaxError, StreamlitValueBelowMinError) as e:
            # A setting carried over from a page whose control allows other values (the Temperature
            # lab's T goes to 30, Train's to 20): forget the widgets' remembered values so each is
            # read again from the link, where an out-of-range value falls back to the default.
            for key in list(st.query_params):
                st.session_state.pop(key, None)
            st.session_state["kd_link_reset"] = (
                f"A setting carried over to this page was out of range ({e}); it was reset to this "
                "page's default.")
            st.rerun()


if __name__ == "__main__":
    main()
