"""What API and push sources share: the batch record format, the endpoint schemas (typed columns and the
mapping from a vendor record), and the ledger seam for tokens and calls."""
