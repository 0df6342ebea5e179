"""dlbench: train the text's IMDB and Reuters models and record what the machine did."""

__version__ = "0.1.0"
