"""`python -m models`: list the stored flat-price models and move them between stages."""
