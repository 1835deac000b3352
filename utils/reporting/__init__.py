"""Reading finished results folders back: the summaries and plots of plot.py."""
