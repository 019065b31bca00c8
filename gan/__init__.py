"""A Keras DCGAN on handwritten digits: data, model, resumable training and generation.

Nothing in this package imports Streamlit: the pages in ``pages/`` and the
command line (``python -m gan``) are front ends over it.
"""

__version__ = "0.1.0"
