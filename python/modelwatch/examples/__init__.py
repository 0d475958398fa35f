"""The example monitors' own code: what is domain-specific lives here, never in the generic package."""
