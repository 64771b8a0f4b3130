"""`python -m batch INPUT OUTPUT`: price a whole listings table on Spark (see batch/job.py)."""
