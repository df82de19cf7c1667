"""Analytics over the event store: overview, and (later) funnels, retention, lifecycle, RFM, CLV."""
