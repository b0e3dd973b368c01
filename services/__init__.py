"""The model services: one folder per service (task + servicer), see DESIGN.md §3."""
