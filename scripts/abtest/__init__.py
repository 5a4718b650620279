"""`apg abtest`: a held-out split replayed through a running service as A/B traffic, its labels posted back as feedback.

traffic.py   the held-out rows (ML-100K, ML-1M or a CSV/Parquet table) in time order, one user per request
replay.py    POST /score then POST /feedback against the service, one request at a time; what each arm answered
report.py    per arm: online AUC, CTR, calibration, logloss, latency, with bootstrap CIs over users, differences
             between arms, the table, JSON and the plot over time
command.py   the options and the command
"""
