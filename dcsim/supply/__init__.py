"""The supply side of a site: grid connection, on-site generation, batteries, dispatch."""
