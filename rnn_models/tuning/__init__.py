"""Runs on Ray Tune: `train` (train.py) and `tune` (search.py) open a session (session.py), whose experiment
runs one Tune trial per architecture, or per sampled configuration; each trial drives a Ray Train run (trial.py)."""
