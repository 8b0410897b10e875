"""The canonical environment names, without pandas: the CI gate's remote mode checks ``--environment`` with them."""

ENVIRONMENTS = ("production", "staging", "testing", "development", "other")
