"""Presets and a guided tour: one-click setups of the classic experiments, each a link a teacher
can hand out, and a route through the lab pages."""
from __future__ import annotations

import streamlit as st

from kdapp import lab
from kdapp import shared as sh


def preset_ui(p: lab.Preset) -> None:
    with st.container(border=True):
        st.markdown(f"#### {p.title}")
        st.markdown(p.text)
        for link in p.links:
            c1, c2 = st.columns([2, 3], vertical_alignment="center")
            c1.page_link(link.page, label=link.label, query_params=link.query,
                         icon=":material/arrow_forward:")
            c2.code(lab.page_url(link.path, link.query), language=None, wrap_lines=True)


def tour_ui() -> None:
    st.subheader("A guided tour")
    st.caption("About half an hour, in this order; every step is one page.")
    for i, (page, title, text) in enumerate(lab.TOUR, start=1):
        c1, c2 = st.columns([1, 3], vertical_alignment="center")
        c1.page_link(page, label=f"{i}. {title}", icon=":material/school:")
        c2.markdown(text)


def main() -> None:
    sh.open_page("presets")
    st.title("Presets and a guided tour")
    st.caption("Each preset opens a page with every control already set; nothing runs until you "
               "press Start. The address beside each link is the same setup, to share.")
    st.subheader("Presets")
    for p in lab.presets():
        preset_ui(p)
    tour_ui()


main()
