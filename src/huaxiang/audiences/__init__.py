"""Audiences (人群包): named rule definitions, size estimates, immutable snapshots with a holdout
group, diffs, overlaps and exports for outreach."""
