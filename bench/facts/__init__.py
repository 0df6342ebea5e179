"""Facts both tools read: the version table, the instance catalog and GPU datasheets."""
