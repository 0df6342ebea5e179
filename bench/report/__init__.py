"""Reports people can read: report.md, report.html, results.csv, and `compare`."""
