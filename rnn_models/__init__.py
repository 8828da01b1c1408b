"""Sentiment on IMDB with four recurrent-family architectures, trained with Ray (Data, Train, Tune)."""

__version__ = "0.1.0"
