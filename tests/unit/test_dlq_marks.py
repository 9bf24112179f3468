"""The DLQ mark: an offset plus the records replayed out of order above it, kept in commit metadata."""

from keel.ops.marks import Mark
from keel.ops.records import parse_record_id, record_id


def test_records_replayed_out_of_order_are_remembered_and_fold_into_the_offset_once_contiguous():
    mark = Mark(offset=3)
    mark.add(5)
    mark.add(6)
    assert (mark.offset, mark.covers(4), mark.covers(5), mark.covers(7)) == (3, False, True, False)
    read_back = Mark.parse(mark.offset, mark.metadata(), first=0)
    assert read_back.done == {5, 6} and mark.metadata() == '{"done":[[5,6]]}'
    read_back.add(3)
    read_back.add(4)
    assert (read_back.offset, read_back.done, read_back.metadata()) == (7, set(), "")


def test_retention_past_the_mark_and_foreign_metadata_leave_a_usable_mark():
    assert Mark.parse(2, "", first=10).offset == 10  # records below 10 are gone: nothing left there
    assert Mark.parse(4, "written by another tool", first=0) == Mark(4)


def test_record_ids_name_topics_that_contain_dots_and_slashes():
    assert parse_record_id(record_id("orders.dlq", 3, 41)) == ("orders.dlq", 3, 41)
    assert parse_record_id("a/b.dlq/0/7") == ("a/b.dlq", 0, 7)
