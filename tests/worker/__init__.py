"""The app under Microsoft's library worker (azure-functions-runtime) on Python 3.13."""
