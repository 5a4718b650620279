"""`apg data synth` and `apg data convert`: Parquet logs for the streaming trainer.

synth.py     a Criteo-shaped CTR log of any size, its schema and the teacher's Bayes-optimal metrics (the command)
teacher.py   the log's generative model: Zipf categorical fields, heavy-tailed counts, the group-wise click teacher
convert.py   a CSV/TSV streamed into Parquet shards, every column as a string (the command)
output.py    what both write with: an OUT that appears whole or not at all, contiguous shards, progress
"""
