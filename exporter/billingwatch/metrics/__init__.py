"""The scrape side: the metric catalogue, label vocabularies and the collectors."""
