"""The machine model both sides share (DESIGN §3, §8): the target's fields (`target`), the
cycle cost of every tile op and transfer (`cost`), and the routing-color rule (`colors`).

The compiler plans, places and lowers against these; the simulator charges and checks with
the same code, so the two can never disagree about what the machine is.
"""
