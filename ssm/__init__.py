from ssm.encoders import SequenceEncoder as SequenceEncoder
from ssm.selective_scan import selective_scan as selective_scan
from ssm.selective_scan import selective_scan_fn as selective_scan_fn
from ssm.selective_scan import selective_scan_ref as selective_scan_ref
from ssm.state_update import selective_state_step as selective_state_step
from ssm.state_update import selective_state_update as selective_state_update
