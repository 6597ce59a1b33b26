"""The town's rules: what makes each form's year realistic, one :class:`FormRule` a form.

A rule says who fills the form and when (``plan``, see :mod:`.schedule`), how its fields are
answered (``fields``, see :mod:`.spec`), how many entries its repeats get, which findings are
closed by an edit (``followup``) and which follow-up items villages report fixed with the
rectification form (``fixes``, see :mod:`.fixes`). A form without an entry still simulates
(monthly, per village when it has a village field), so a new form needs no new code. How people
fall behind, err and correct themselves is :mod:`.habits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.analysis.followups import SANITATION_KIND
from pipelines.analysis.plan import Plan
from pipelines.demo.simulate.schedule import Dated, Periodic, Roster, _md_plus
from pipelines.demo.simulate.spec import (
    Bands,
    Becomes,
    By,
    Calc,
    DaysAfter,
    Int,
    Likert,
    Map,
    Maybe,
    Multi,
    Photo,
    Point,
    Ramp,
    Repeat,
    RoadPoint,
    Share,
    Slow,
    Spec,
    Text,
    Trace,
    W,
    When,
    _Ctx,
)


@dataclass(frozen=True)
class Followup:
    """Repeat entries left open (``field`` = ``value``) and closed later by an edit of the
    submission, on a day up to their due date: (normal, slow) share closed, of the entries not
    reported fixed with the rectification form (those stay open in the submission); the edit
    sets ``becomes`` and blanks the fields that are then no longer relevant."""

    repeat: str
    field: str
    value: str
    becomes: str
    due: str
    share: tuple[float, float]
    clear: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fixes:
    """Follow-up items of a form that are reported fixed with the rectification form (整改反馈).

    An item is an entry of ``repeat`` (None: the whole submission) whose ``when`` field has one
    of the values (None: every entry); ``kind`` is its kind in the follow-up lists
    (:mod:`pipelines.analysis.followups`), part of its id. ``latest``: the fields naming a
    subject whose lists keep only its latest submission; then only the subject's last one of the
    year is fixed. A (normal, slow village) ``share`` of the items is fixed ``days`` after it was
    found (slower in slow villages). ``what``: the fields describing the item (choice labels or
    text); ``done`` and ``not_yet``: what people write when it is fixed or not yet (``{what}`` is
    the first field's answer).
    """

    kind: str
    share: tuple[float, float]
    days: tuple[int, int]
    what: tuple[str, ...]
    done: tuple[str, ...]
    not_yet: tuple[str, ...]
    repeat: str | None = None
    when: tuple[str, tuple[str, ...]] | None = None
    latest: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FormRule:
    """The realism of one form. ``who``: (role, field naming the person's post, or
    ``pool:N`` for N interchangeable staff); ``subject``: what a duplicate repeats;
    ``readonly``: answers filled in for the person, which no later edit touches."""

    plan: tuple[Roster | Periodic | Dated, ...]
    fields: Mapping[str, Spec] = field(default_factory=dict)
    repeats: Mapping[str, Repeat] = field(default_factory=dict)
    who: tuple[str, str] = ("staff", "pool:6")
    hours: tuple[int, int] = (8, 18)
    minutes: tuple[int, int] = (3, 15)
    subject: str | None = None
    approve: float = 0.05
    followup: Followup | None = None
    fixes: Fixes | None = None
    readonly: tuple[str, ...] = ()


_YES = ("yes",)
_OTHER_KM = 10  # the form's planned_km for a segment it does not list
# Road works (month-days): phase 1 must end by 06-30, 府前路东延 runs late; 卧龙村至景区 too.
_ROAD_WORK = {"longling_dongshatu": ("03-01", "06-18"), "longyang_yanzhuang": ("03-10", "06-26"),
              "fuqian_east": ("04-10", "07-22"), "wolong_scenic": ("05-01", "12-18"),
              "other": ("05-10", "09-30")}  # fmt: skip
_STAGES = ((0.0, "not_started"), (0.001, "subgrade"), (0.4, "base"), (0.75, "surface"), (1.0, "completed"))  # fmt: skip
_LAMPS = {"dongzhu_road": (("01-01", 90.0), ("09-30", 140.0)),
          "tourism_road": (("03-01", 16.0), ("11-20", 210.0))}  # fmt: skip
# What people write in free-text fields: short, plausible, never a person's name.
_SAY: dict[str, tuple[str, ...]] = {
    "feedback": ("家长配合，学生在家表现良好", "已与家长沟通学习习惯培养", "提醒家长注意假期安全",
                 "家长反映孩子作业时间偏长", "学生近期进步明显", "已讲解防溺水安全知识",
                 "家长希望加强课后服务"),
    "follow_up_note": ("下周电话回访", "联系学区心理老师跟进", "与班主任共同再次入户"),
    "referral_note": ("血压偏高，转诊龙阳卫生院复查", "血糖控制不佳，建议上级医院就诊",
                      "心电图异常，转诊复查"),
    "welfare_note": ("在岗履职正常", "本人外出务工，长期不在岗", "已超龄，建议调整岗位"),
    "dibao_note": ("家庭收入无明显变化", "子女外出务工，收入增加", "户主患病，支出增加"),
    "responsible": ("村两委", "村保洁员", "网格员", "包片干部"),
    "sweep_note": ("主街整洁，背街小巷仍有零星垃圾", "坑塘周边需清理", "已督促农户清理柴草堆"),
    "segment_other": ("村内道路硬化", "生产路修缮"),
    "road_note": ("路基压实完成", "雨天停工两日", "水稳层施工中", "沥青面层摊铺"),
    "road_other": ("村内主街", "龙山路"),
    "section": ("K0+000—K1+500", "K1+500—K3+000", "镇驻地段", "景区段"),
    "lighting_note": ("部分路段灯杆倾斜", "线路老化，已报修", "亮灯正常"),
    "square_note": ("器材螺丝松动，已通知维修", "广场地面有破损", "器材完好"),
    "issues": ("消防通道堵塞，已责令整改", "电动车违规充电，已劝导", "夜间照明不足，已报告村委",
               "发现可疑人员，已核查身份"),
    "police_note": ("本月开展电诈专项打击", "辖区治安总体平稳"),
    "suggestion": ("希望增加路灯", "建议加快道路硬化", "希望村里多放电影", "建议卫生室延长服务时间",
                   "希望加强夜间巡逻", "垃圾清运不够及时", "希望增加健身器材", "低保政策宣传不够"),
    "publicity_note": ("已在“山水龙阳”公众号发布",),
    "show": ("送戏下乡进{village}：柳琴戏《喝面叶》", "送戏下乡进{village}：柳琴戏《小姑贤》",
             "送戏下乡进{village}：吕剧《李二嫂改嫁》", "送戏下乡进{village}：山东梆子《穆桂英挂帅》",
             "送戏下乡进{village}：豫剧《朝阳沟》"),
    "film": ("公益电影：《我和我的祖国》", "公益电影：《长津湖》", "公益电影：《流浪地球》",
             "公益电影：《你好，李焕英》", "公益电影：《我和我的家乡》", "公益电影：《中国医生》",
             "公益电影：《万里归途》", "科教片：《农村安全用电》", "科教片：《小麦病虫害防治》"),
}  # fmt: skip
# What a village writes in a rectification (整改措施): (fixed, not yet) per kind of item.
_FIXED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sanitation": (("已组织村保洁员将{what}清理完毕，现场已清扫干净", "{what}已清运，已督促农户不再乱堆乱放",
                    "村两委带领党员志愿者集中清理{what}，已恢复整洁", "已联系农户自行清理{what}，村干部现场验收",
                    "{what}已清理，纳入网格员日常巡查"),
                   ("已通知农户清理{what}，农户外出务工，尚未清理完毕", "{what}已清理大部分，剩余部分本周内清运",
                    "清运车辆紧张，{what}尚未清运完毕")),
    "fitness": (("已联系厂家维修{what}，恢复正常使用", "已更换{what}损坏部件并紧固螺丝", "已补装{what}，经验收合格"),
                ("{what}已设置警示标识暂停使用，等待厂家配件", "已报镇文体站，{what}待统一维修")),
    "lighting": (("已更换灯头，路灯恢复亮灯", "线路已检修，恢复正常照明", "已联系供电所维修，夜间复查亮灯正常"),
                 ("已报修，等待更换灯杆", "配件未到，已在路口设置临时照明")),
    "patrol": (("已督促整改，现场复查合格", "已清理消防通道并张贴警示标识", "村两委已约谈经营户，隐患已消除"),
               ("已下发整改通知，限期整改", "经营户正在整改，将再次复查")),
    "suggestion": (("已向群众反馈办理情况，群众表示满意", "已提交村民议事会讨论，并入户答复",
                    "已上报镇相关部门，并电话答复群众"),
                   ("已记录群众意见，正在协调相关部门", "已入户解释政策，群众仍有意见，继续跟进")),
}  # fmt: skip


def _fixes(say: str, kind: str, share: tuple[float, float], days: tuple[int, int], what: tuple[str, ...], **how: Any) -> Fixes:  # fmt: skip
    return Fixes(kind, share, days, what, *_FIXED[say], **how)


_FESTIVALS = {"eryueer": "{village}二月二龙抬头民俗活动", "womens_day": "三八妇女节健步走",
              "youth_day": "五四青年志愿服务活动", "chongyang": "重阳节敬老登山活动",
              "climbing": "全民健身登山比赛", "picking": "龙阳采摘节",
              "square_dance": "{village}广场舞展演", "other": "{village}村民文艺汇演"}  # fmt: skip
_PUBLICITY = {
    "police": ("满意龙阳｜派出所反电诈宣传进村入户", "满意龙阳｜平安龙阳 夜巡守护"),
    "health_center": ("满意龙阳｜老年人免费查体持续进行", "满意龙阳｜医保政策进万家"),
    "school_district": ("满意龙阳｜教师家访暖人心", "满意龙阳｜龙阳学区家长接待日"),
    "civil_affairs": ("满意龙阳｜低保核查入户走访", "满意龙阳｜困难群众临时救助及时到位"),
    "sanitation": ("满意龙阳｜“三堆两垛”集中清理", "满意龙阳｜村庄清洁行动见成效"),
    "culture_sports": ("满意龙阳｜送戏下乡走进村庄", "满意龙阳｜一村一月一场电影"),
    "social_affairs": ("满意龙阳｜群众满意度提升工程月调度", "满意龙阳｜倾听民声解民忧"),
    "social_security": ("满意龙阳｜公益性岗位“回头看”", "满意龙阳｜就业帮扶政策解读"),
}
# weekly chance that a department sends at least one item (police and sanitation never miss)
_PUBLICITY_WEEKS = {"police": 1.0, "health_center": 0.96, "school_district": 0.9,
                    "civil_affairs": 0.93, "sanitation": 1.0, "culture_sports": 0.97,
                    "social_affairs": 0.95, "social_security": 0.82}  # fmt: skip
_PLACES = {"school": ("村小学门口", "学区中心校周边"), "market": ("集贸市场", "农贸大集"),
           "hotel": ("镇区宾馆",), "internet_cafe": ("镇区网吧",),
           "scenic": ("龙山景区入口", "景区停车场"), "factory": ("村办企业", "加工厂"),
           "other": ("村委会周边", "主要路口")}  # fmt: skip
# 三夏 harvest waste in Q2, 三秋 harvest waste and weeds in Q3, the winter clean-up in Q4
_SEASONAL = {"q1": ("winter_cleanup",), "q2": ("summer_harvest_waste",),
             "q3": ("autumn_harvest_waste", "weeds"), "q4": ("winter_cleanup",)}  # fmt: skip
_BASE_CAMPAIGN = ("piles_stacks", "ponds_ditches", "lanes", "entry_roads")


def _link(host: str, n: int) -> Calc:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return Calc(lambda c: host + "".join(c.rng.choice(alphabet) for _ in range(n)))


def _broken(c: _Ctx) -> int:
    return max(0, (c.get("lamps_installed") or 0) - (c.get("lamps_working") or 0))


def _post_conclusion(c: _Ctx) -> str:
    # the form refuses "compliant" unless the holder is on duty and meets the rules
    if c.get("meets_rules") == "yes" and c.get("on_duty") == "yes":
        return "compliant"
    return c.rng.choice(("rectify", "dismiss"))


def _members_verified(c: _Ctx) -> int:
    on_file = int(c.get("members_on_file") or 0)
    return max(0, on_file - (c.rng.random() < 0.03))  # now and then one member is away


def _repair_needed(c: _Ctx) -> str:
    return "yes" if any(i.get("condition") != "good" for i in c.items("equipment")) else "no"


def _festival(kind: str, villages: int, when: str | None = None) -> tuple[str, int, dict[str, str]]:
    return (when or kind, villages, {"event_type": "festival", "festival_kind": kind})


RULES: dict[str, FormRule] = {
    "home_visit": FormRule(
        plan=(Roster("students.csv", "student", rounds=(("01-04", "07-12"), ("02-20", "12-15")),
                     miss=(0.002, 0.03), columns={"class_id": "class"}, gap=30),),
        fields={
            "mode": W({"home": 45, "phone": 30, "parent_meeting": 15, "reception_day": 10}),
            "topics": Multi(1, 3),
            "feedback": Text(_SAY["feedback"], p=0.6),
            "follow_up": W({"yes": 8, "no": 92}),
            "follow_up_note": When(("follow_up",), _YES, Text(_SAY["follow_up_note"])),
        },
        who=("teacher", "class_id"), hours=(8, 20), subject="student",
    ),
    "health_checkup": FormRule(
        plan=(Roster("residents.csv", "resident", rounds=(("03-01", "11-25"),),
                     miss=(0.004, 0.06), again=0.02),),
        fields={
            "items": Multi(2, 6, always=("vitals", "blood_sugar")),
            "referral": W({"yes": 5, "no": 95}),
            "referral_note": When(("referral",), _YES, Text(_SAY["referral_note"])),
            "policy_explained": Slow(W({"yes": 997, "no": 3}), W({"yes": 96, "no": 4})),
            "leaflet_given": W({"yes": 97, "no": 3}),
        },
        who=("doctor", "village"), hours=(7, 17), subject="resident",
    ),
    "welfare_post_review": FormRule(
        plan=(Roster("welfare_posts.csv", "post_holder", rounds=(("01-10", "09-05"),),
                     miss=(0.0, 0.03)),),
        fields={
            "on_duty": W({"yes": 97, "no": 3}),
            "meets_rules": W({"yes": 96, "no": 4}),
            "problems": When(("meets_rules", "on_duty"), ("no",), Multi(1, 2)),
            "conclusion": Calc(_post_conclusion),
            "note": Text(_SAY["welfare_note"], p=0.2),
        },
        who=("shebao", "pool:4"), subject="post_holder", approve=0.5,
    ),
    "dibao_verification": FormRule(
        plan=(Roster("dibao_households.csv", "household", rounds=(("02-01", "10-05"),),
                     miss=(0.0, 0.05), columns={"members_on_file": "members"}),),
        fields={
            "members_verified": Calc(_members_verified),
            "income_change": W({"none": 80, "up": 12, "down": 8}),
            "assets_change": W({"none": 92, "up": 6, "down": 2}),
            "conclusion": W({"maintain": 86, "adjust": 8, "stop": 3, "new": 3}),
            "photo": Photo(0.9),
            "location": Point(0.95),
            "note": Text(_SAY["dibao_note"], p=0.3),
        },
        who=("minzheng", "pool:6"), subject="household", approve=0.6,
    ),
    "sanitation_sweep": FormRule(
        plan=(Periodic("quarter", within=(0.0, 0.85), slow_skip=0.15),
              Periodic("quarter", prob=0.1, within=(0.4, 1.0))),  # a second sweep now and then
        fields={
            "quarter": Calc(lambda c: f"q{(c.visit.filled.month - 1) // 3 + 1}"),  # of today()
            "campaign": By(("quarter",), {q: Multi(1, 3, pool=_BASE_CAMPAIGN, always=s)
                                          for q, s in _SEASONAL.items()}),
            "has_findings": Slow(W({"yes": 55, "no": 45}), W({"yes": 75, "no": 25})),
            "kind": W({"manure_pile": 12, "firewood_pile": 18, "garbage_pile": 20,
                       "straw_stack": 14, "hay_stack": 6, "pond_ditch": 10, "lane_garbage": 12,
                       "weeds": 6, "other": 2}),
            "location": Point(0.9),
            "photo": Photo(0.8),
            "status": W({"cleared": 65, "to_rectify": 35}),
            "rectify_by": When(("status",), ("to_rectify",), DaysAfter("check_date", 5, 30)),
            "responsible": When(("status",), ("to_rectify",), Text(_SAY["responsible"], p=0.8)),
            "score": Slow(Int(75, 98), Int(60, 88)),
            "note": Text(_SAY["sweep_note"], p=0.3),
        },
        repeats={"findings": Repeat((1, 4), when=(("has_findings",), _YES))},
        who=("cadre", "village"), subject="village",
        # half the findings left 待整改 are reported fixed with the rectification form (fewer
        # in slow villages), some closed by an edit of the sweep; of those still 待整改 in the
        # data, 55–65% have a rectification
        followup=Followup("findings", "status", "to_rectify", "cleared", "rectify_by",
                          share=(0.5, 0.2), clear=("rectify_by", "responsible")),
        fixes=_fixes("sanitation", SANITATION_KIND, (0.5, 0.3), (2, 30), ("kind",),
                     repeat="findings", when=("status", ("to_rectify",))),
    ),
    "fitness_square": FormRule(
        plan=(Periodic("quarter", prob=0.6, within=(0.05, 0.95), slow_skip=0.2),),
        fields={
            "square_present": Becomes("no", "yes", already=0.8, window=("03-01", "11-30"),
                                      never=(0.05, 0.5)),
            "square_upgraded": When(("square_present",), _YES,
                                    Becomes("no", "yes", window=("04-01", "08-31"), count=5)),
            "location": When(("square_present",), _YES, Point(0.9)),
            "equipment_present": Becomes("no", "yes", already=0.85, window=("03-01", "11-30"),
                                         never=(0.05, 0.4)),
            "item_kind": W({"walker": 3, "space_walker": 3, "waist_twister": 3, "bars": 2,
                            "rider": 2, "table_tennis": 2, "basketball": 1, "other": 1}),
            "condition": Slow(W({"good": 90, "damaged": 8, "missing": 2}),
                              W({"good": 76, "damaged": 18, "missing": 6})),
            "photo": Photo(0.3),
            "repair_needed": Calc(_repair_needed),
            "note": Text(_SAY["square_note"], p=0.2),
        },
        repeats={"equipment": Repeat((3, 8), when=(("equipment_present",), _YES))},
        who=("wenti", "pool:3"), subject="village",
        fixes=_fixes("fitness", "健身器材损坏/缺失", (0.35, 0.15), (5, 45), ("item_kind", "condition"),
                     repeat="equipment", when=("condition", ("damaged", "missing")),
                     latest=("village",)),
    ),
    "culture_event": FormRule(
        plan=(
            Periodic("year", presets={"event_type": "show"}, start="04-01", end="11-30",
                     slow_skip=0.3),
            Periodic("month", presets={"event_type": "film"}, start="04-01", prob=0.93,
                     slow_skip=0.35, within=(0.05, 0.95)),
            Dated((_festival("eryueer", 6), _festival("womens_day", 8, "03-08"),
                   _festival("youth_day", 4, "05-04"), _festival("picking", 5, "06-10"),
                   _festival("square_dance", 6, "07-22"), _festival("climbing", 4, "10-02"),
                   _festival("chongyang", 8))),
        ),
        fields={
            "festival_kind": When(("event_type",), ("festival",), W(dict.fromkeys(_FESTIVALS, 1))),
            "title": By(("festival_kind", "event_type"),
                        {**{k: Text((v,)) for k, v in _FESTIVALS.items()},
                         "show": Text(_SAY["show"]), "film": Text(_SAY["film"])}),
            "audience": Maybe(0.9, By(("event_type",), {"show": Int(150, 600), "film": Int(30, 180)},
                                      default=Int(50, 400))),
            "photo": Photo(0.8),
            "location": Point(0.7),
        },
        who=("wenti", "pool:3"), hours=(14, 20), approve=0.2,
    ),
    "police_patrol": FormRule(
        plan=(Periodic("month", count=(1, 3)),),
        fields={
            "place_kind": Maybe(0.6, W({"school": 3, "market": 3, "hotel": 1, "internet_cafe": 1,
                                        "scenic": 1, "factory": 2, "other": 1})),
            "place_name": By(("place_kind",), {k: Text(v) for k, v in _PLACES.items()}),
            "issues_found": W({"yes": 8, "no": 92}),
            "issues": When(("issues_found",), _YES, Text(_SAY["issues"])),
            "location": Point(0.9),
            "photo": Photo(0.3),
        },
        who=("police", "pool:12"), hours=(9, 23),
        fixes=_fixes("patrol", "治安隐患", (0.3, 0.15), (1, 20), ("place_kind", "place_name", "issues"),
                     when=("issues_found", _YES)),
    ),
    "police_monthly": FormRule(
        plan=(Periodic("month", per=None, previous=True, within=(0.0, 0.15)),),
        fields={
            "small_reported": Int(9, 20),
            "small_solved": Share("small_reported", 0.93, jitter=0.06),
            "public_order_cases_ly": Int(10, 18),
            "public_order_cases": Share("public_order_cases_ly", 0.64, jitter=0.15),
            "criminal_cases_ly": Int(6, 12),
            "criminal_cases": Share("criminal_cases_ly", 0.78, jitter=0.15),  # short of −30%
            "preventable_cases_ly": Int(14, 24),
            "preventable_cases": Share("preventable_cases_ly", 0.62, jitter=0.12),
            "note": Text(_SAY["police_note"], p=0.3),
        },
        who=("police", "pool:1"), approve=0.5,
    ),
    "satisfaction_survey": FormRule(
        plan=(Periodic("month", count=(4, 6), within=(0.3, 0.85)),),
        fields={
            "sat_environment": Likert(3.9, 3.3), "sat_security": Likert(4.3, 3.9),
            "sat_medical": Likert(4.1, 3.7), "sat_culture": Likert(4.0, 3.4),
            "sat_education": Likert(4.2, 3.9), "sat_assistance": Likert(3.8, 3.3),
            "policy_aware": Slow(W({"yes": 93, "no": 7}), W({"yes": 84, "no": 16})),
            "suggestion": Text(_SAY["suggestion"], p=0.3),
            "needs_follow_up": When(("suggestion",), None, W({"yes": 6, "no": 4})),
        },
        who=("cadre", "village"), hours=(9, 19),
        fixes=_fixes("suggestion", "群众意见建议", (0.06, 0.02), (3, 30), ("suggestion",),
                     when=("needs_follow_up", _YES)),
    ),
    # No schedule: :mod:`.fixes` sends one for each follow-up item a village fixes.
    "rectification": FormRule(
        plan=(),
        fields={"photo": By(("done",), {"yes": Photo(), "no": Photo(0.3)})},
        who=("cadre", "village"), minutes=(2, 8), approve=0.3,
        readonly=("item_id", "village", "finding"),
    ),
    "publicity_item": FormRule(
        plan=(Periodic("week", per="department", count=(1, 2), prob=_PUBLICITY_WEEKS),),
        fields={
            "title": By(("department",), {k: Text(v) for k, v in _PUBLICITY.items()}),
            "channel": W({"wechat_account": 6, "wechat_group": 3, "short_video": 1}),
            "link": By(("channel",), {"wechat_account": _link("https://mp.weixin.qq.com/s/", 22),
                                      "short_video": _link("https://v.douyin.com/", 8)}),
            "note": Text(_SAY["publicity_note"], p=0.2),
        },
        who=("xuanchuan", "department"), hours=(9, 18),
    ),
}  # fmt: skip


def rules_for(plan: Plan) -> dict[str, FormRule]:
    """:data:`RULES` with the road forms' rules derived from ``plan``'s declared segments."""
    lit = [s.segment_id for s in plan.segments_of("lighting")]
    return {
        **RULES,
        "road_progress": _road_rule(plan.planned_km),
        "street_lighting": _lighting_rule(lit),
    }


def _road_rule(planned: Mapping[str, float]) -> FormRule:
    # the demo's works calendar for 龙阳镇's ids; any other declared segment runs like "other"
    work = {**{s: _ROAD_WORK["other"] for s in planned}, **_ROAD_WORK}
    knots = {s: ((a, 0.0), (b, planned.get(s, 1.2))) for s, (a, b) in work.items()}
    return FormRule(
        plan=(
            Periodic(
                "week",
                per="segment",
                closing=True,
                prob={**dict.fromkeys(planned, 0.55), "other": 0.08},
                windows={s: (a, _md_plus(b, 7)) for s, (a, b) in work.items()},
            ),
        ),
        fields={
            "segment_other": When(("segment",), ("other",), Text(_SAY["segment_other"])),
            "planned_km": Map("segment", planned, _OTHER_KM),
            "km_done": Ramp("segment", knots),
            "stage": Bands("km_done", "planned_km", _STAGES),
            "built_trace": Trace("segment", "km_done", "planned_km", p=0.4),
            "photo": Photo(0.7),
            "note": Text(_SAY["road_note"], p=0.3),
        },
        who=("jianshe", "pool:2"),
        approve=0.3,
    )


def _lighting_rule(lit: Sequence[str]) -> FormRule:
    return FormRule(
        plan=(
            Periodic(
                "month",
                per="road",
                within=(0.1, 0.9),
                prob={**dict.fromkeys(lit, 1.0), "other": 0.15},
                windows={"tourism_road": ("03-01", "12-31")},
            ),
        ),
        fields={
            "road_other": When(("road",), ("other",), Text(_SAY["road_other"])),
            "section": Text(_SAY["section"], p=0.5),
            "lamps_installed": Ramp(
                "road", _LAMPS, default=(("01-01", 20.0), ("12-31", 40.0)), digits=0
            ),
            "lamps_working": Share(
                "lamps_installed", (("01-01", 0.86), ("11-20", 1.0)), jitter=0.03
            ),
            "has_faults": Calc(lambda c: "yes" if _broken(c) else "no"),
            "fault_kind": W({"lamp_out": 70, "damaged_pole": 10, "cable": 15, "other": 5}),
            "location": RoadPoint("road", p=0.8),
            "photo": Photo(0.5),
            "note": Text(_SAY["lighting_note"], p=0.3),
        },
        repeats={
            "faults": Repeat(
                lambda c: min(_broken(c), c.rng.randint(1, 4)), when=(("has_faults",), _YES)
            )
        },
        who=("cadre", "pool:4"),
        hours=(19, 22),
        fixes=_fixes(
            "lighting",
            "路灯故障",
            (0.3, 0.3),
            (2, 20),
            ("road", "road_other", "section", "fault_kind"),
            repeat="faults",
            latest=("road", "road_other", "section"),
        ),
    )
